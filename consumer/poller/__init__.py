"""`speechjobs poll`: ask the vendors about jobs whose notifications are due, and publish the answers."""
