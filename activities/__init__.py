"""Activities: the side effects of the lifecycle (email over SMTP, records in SQL)."""
