"""What every partnerflow process shares below the worker: configuration, logging, the Temporal
connection and data converter, the records' migrations, search attribute registration, exit."""
