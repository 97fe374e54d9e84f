"""Tencent Cloud CI (Cloud Infinite): the parser (parse); its API client sits beside it."""
