"""The ssh runtime: instances are processes on a fleet of hosts, each under zerodown's
supervisor there, driven over one SSH connection per host. asyncssh is imported only when this
runtime is used; `remote` (run on the hosts) needs the standard library alone."""
