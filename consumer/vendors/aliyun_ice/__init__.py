"""Alibaba Cloud ICE: the parser (parse); its API client and callback signature check sit beside it."""
