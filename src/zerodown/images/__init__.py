"""Container images of a service: base images built locally, per-revision builds, a registry.

`base` makes a base image once from a Debian rootfs (no public image registry is reachable from
the machines zerodown is built for); `build` turns a revision into an image; `registry` pushes,
tags and pins it by manifest digest; `retention` prunes what no policy or instance keeps.
"""
