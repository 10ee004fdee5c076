"""PostgreSQL: connection (configured or embedded), migrations, loaders, run ledger."""
