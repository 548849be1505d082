"""The `storyloop` command. Thin: each command parses, calls one package function, prints."""
