"""The configuration: YAML -> frozen, validated models; key-path error messages."""
