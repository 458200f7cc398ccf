"""``python -m es_serverless``: the ``es-serverless`` command (``es_serverless.cli``)."""

from es_serverless.cli import main

if __name__ == "__main__":
    main()
