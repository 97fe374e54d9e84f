"""`speechjobs run`: the consumer process (delivery batching, then the pipeline)."""
