"""What every stage shares: typed records (`records`), user errors (`errors`), stage threads
joined by bounded queues (`stages`) and 5-point face alignment (`alignment`)."""
