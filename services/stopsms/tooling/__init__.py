"""Development tooling: code generation and checks that keep the repository consistent."""
