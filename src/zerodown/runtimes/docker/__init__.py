"""The Docker runtime: instances are containers of a revision's image, pinned by digest, run
through the Docker Engine API (Docker, or Podman's `podman system service`). docker-py is
imported only when this runtime is used."""
