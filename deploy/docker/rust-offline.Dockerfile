# A stand-in for rust:1-bookworm where no image registry answers (made by
# deploy/image-check.sh on top of a debootstrapped Debian): Debian's C/C++
# toolchain and Python. The Rust toolchain is not copied in: the host's is
# bind-mounted read-only at build time,
#   podman build -v "$(rustc --print sysroot)":/usr/local/rust:ro ...
# and the host's crate cache read-write at /usr/local/cargo/registry.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates gcc g++ libc6-dev make pkg-config python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# The certificate authorities the build host trusts beyond Debian's (a
# TLS-intercepting egress proxy, say); the directory may be empty.
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt
