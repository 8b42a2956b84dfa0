"""The Calculator: claims tasks from PostgreSQL and evaluates them."""
