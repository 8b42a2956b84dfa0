"""Code shared by the API and the Calculator: settings, database access,
migrations and the expression grammar."""
