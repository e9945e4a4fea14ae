#!/bin/bash
# Runs as PID 1 in the guest, on the host's userland: start udev so that NIC
# drivers load as on a real host, run the lab command, save its output and
# exit status to the shared directory, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
# /tmp stays the host's (writable through the overlay): the checkout may live there
mkdir -p /dev/pts /dev/shm /run/lab /run/udev
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm  # POSIX semaphores: ansible-playbook's workers need them
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labio /run/lab
hostname pcimgr-lab
ip link set lo up
/lib/systemd/systemd-udevd --daemon --resolve-names=never 2>/run/lab/udevd.log
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=60
cd "$(cat /run/lab/cwd)"
export PCIMGR_LAB_GUEST=1 HOME=/root
timeout "$(cat /run/lab/timeout)" bash /run/lab/command >/run/lab/output 2>&1
echo $? >/run/lab/status
sync
/bin/busybox poweroff -f
