"""Alibaba Cloud Tingwu: the parser (parse); its API client sits beside it."""
