"""Training that makes new zoo models: backdoored variants for defense tests (``backdoor``).
Each result is saved under the harness cache as a local zoo entry with its recipe."""
