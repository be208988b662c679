"""Storage: the database engine and migrations, the SQL schema and the SQL conversation store."""
