"""Huawei Cloud MetaStudio: the parser (parse); its API client sits beside it."""
