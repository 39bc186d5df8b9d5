"""Fakes shared by the end-to-end tests: a generated SEV-SNP machine behind configfs-tsm."""
