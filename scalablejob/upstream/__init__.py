"""Each other project's internals that scalablejob relies on, one module per project (Celery's consumer,
uvicorn, Flower, redis-py), each checking at import that what it uses is there."""
