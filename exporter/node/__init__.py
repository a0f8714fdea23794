"""Node mode (--mode=node): one exporter per machine watches the sockets of every network
namespace on it (each pod's, each container's) and labels them with where they live."""
