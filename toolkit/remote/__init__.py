"""Code that runs on the managed hosts (standard library only; hosts need no toolkit)."""
