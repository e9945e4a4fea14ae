#!/bin/busybox sh
# initramfs /init: mount the host's / read-only over 9p under a tmpfs overlay,
# give it the guest kernel's modules, and switch_root into it (udev ignores
# requests inside a chroot, so a real switch_root is needed).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "lab-init: insmod $m failed"; done
stage2=$(sed -n 's/.*pcimgr.stage2=\([^ ]*\).*/\1/p' /proc/cmdline)
modules=$(sed -n 's/.*pcimgr.modules=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /lower /rw /root
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || exec sh
mount -t tmpfs -o size=512m tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /root
kver=$(uname -r)
mkdir -p "/root/lib/modules/$kver"
mount --bind "/lower$modules" "/root/lib/modules/$kver"
mount --move /dev /root/dev
umount /proc /sys
exec switch_root /root /bin/bash "$stage2"
