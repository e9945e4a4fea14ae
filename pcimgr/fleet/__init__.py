"""Fleet: what pcimgr tells the engines that drive many hosts (Ansible facts, the
Kubernetes device plugin, KubeVirt, Proxmox and Nova configurations), and the
desired-state changes the Ansible modules make. docs/fleet.md."""
