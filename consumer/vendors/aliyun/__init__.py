"""Alibaba Cloud OpenAPI request signing shared by Tingwu and ICE (signer)."""
