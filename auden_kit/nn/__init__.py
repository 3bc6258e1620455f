"""Shared neural building blocks (Zipformer's scaling toolkit and friends)."""
