"""Scripts that run inside the sandbox (stdlib only, no project imports): the trusted test
harness, the candidate runner, and the plain-data wire format between them. They are copied into
each run's private folder; `scoring.grader` starts them."""
