"""The pure core: decoding, normalization, the job state machine, rejections and redaction. No I/O."""
