"""The customer's acceptance page: where the invitation link leads."""
