"""speechjobs: cloud speech-job notifications to one deduplicated event stream."""
