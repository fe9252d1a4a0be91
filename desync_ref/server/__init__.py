"""HTTP servers: chunk-server and index-server (desync ``chunkserver.go``, ``indexserver.go``).

Spec: ``spec/http.md``. Thin: request handlers over the store layer, started by the CLI.
"""
