"""The foo benchmark's baseline candidate: answers short questions with a string."""
