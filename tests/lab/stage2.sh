#!/bin/bash
# Runs as PID 1 in the guest, on the host's userland: start udev so that NIC
# drivers load as on a real host, run the lab command, save its output and
# exit status to the shared directory, power off.
#
# With pcimgr.init=systemd on the kernel command line (the "desktop" boot,
# docs/lab.md) it makes the same mounts, writes a few units into
# /run/systemd/system and execs systemd with pcimgr-lab.target as the only start
# target: the host's udev units, a stand-in display-manager.service holding
# /dev/dri/card0, and pcimgr-lab-command.service, which runs this script again
# as `stage2.sh command` (the same command, environment, output and status).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

run_command() {
    cd "$(cat /run/lab/cwd)"
    export PCIMGR_LAB_GUEST=1 HOME=/root
    timeout "$(cat /run/lab/timeout)" bash /run/lab/command >/run/lab/output 2>&1
    echo $? >/run/lab/status
    sync
    /bin/busybox poweroff -f
}

if [ "$1" = command ]; then  # pcimgr-lab-command.service, under systemd
    udevadm settle --timeout=60
    run_command
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
# /tmp stays the host's (writable through the overlay): the checkout may live there
mkdir -p /dev/pts /dev/shm /run/lab /run/udev
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm  # POSIX semaphores: ansible-playbook's workers need them
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labio /run/lab
hostname pcimgr-lab

if grep -qw pcimgr.init=systemd /proc/cmdline; then
    units=/run/systemd/system
    mkdir -p "$units" /run/systemd/system-generators
    # nothing of the host's own boot: its generators masked, units of ours only, and none
    # of the host's /etc units by the names used here (the overlay, not the host)
    for g in /lib/systemd/system-generators/* /usr/lib/systemd/system-generators/*; do
        ln -sf /dev/null "/run/systemd/system-generators/${g##*/}"
    done
    rm -f /etc/systemd/system/display-manager.service /etc/systemd/system/pcimgr-lab*
    echo pcimgr-lab >/etc/hostname  # systemd sets the hostname from it
    cat >"$units/pcimgr-lab.target" <<EOF
[Unit]
Description=pcimgr lab (desktop boot)
DefaultDependencies=no
Wants=systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service
Wants=display-manager.service pcimgr-lab-command.service
EOF
    cat >"$units/display-manager.service" <<EOF
[Unit]
Description=Stand-in display manager (holds the boot VGA's DRM card open)
DefaultDependencies=no
After=systemd-udev-settle.service

[Service]
Type=simple
ExecStartPre=/bin/sh -c 'until c=\$\$(ls /sys/bus/pci/devices/0000:00:0a.0/drm 2>/dev/null | grep ^card) && [ -e /dev/dri/\$\$c ]; do sleep 0.1; done'
ExecStart=/bin/sh -c 'c=\$\$(ls /sys/bus/pci/devices/0000:00:0a.0/drm | grep ^card); exec sleep infinity 3</dev/dri/\$\$c'
TimeoutStartSec=60
EOF
    cat >"$units/pcimgr-lab-command.service" <<EOF
[Unit]
Description=The lab command (/run/lab/command)
DefaultDependencies=no
After=systemd-udev-settle.service display-manager.service

[Service]
Type=simple
ExecStart=/bin/bash $0 command
Environment=PATH=$PATH TERM=linux
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
# when it cannot even start: power off rather than leave the boot to the harness's timeout
FailureAction=poweroff-immediate
EOF
    exec /lib/systemd/systemd --unit=pcimgr-lab.target
fi

ip link set lo up
/lib/systemd/systemd-udevd --daemon --resolve-names=never 2>/run/lab/udevd.log
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=60
run_command
