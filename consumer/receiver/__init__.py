"""`speechjobs receive`: vendor HTTP callbacks to the inbound exchange, answered 200 only once confirmed."""
