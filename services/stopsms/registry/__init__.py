"""The registry: decides each request, keeps the suppression list and answers checks."""
