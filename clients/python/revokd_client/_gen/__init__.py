"""Generated from proto/revokd/v1/token_service.proto by gen_stubs.py; do not edit."""
