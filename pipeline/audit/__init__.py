"""Privacy audit: measure an anonymized video against its original and show the evidence."""
