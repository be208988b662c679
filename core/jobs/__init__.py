"""Jobs: work the OpenAI API does in the background (batches), recorded as database rows
that the scheduler polls under a lease and whose results are delivered exactly once."""
