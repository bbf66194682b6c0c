#!/bin/busybox sh
# Installed as /bin/modprobe-chroot in the initramfs and set as /proc/sys/kernel/modprobe:
# the kernel's usermode helper runs in the initramfs root, where no modules are installed.
exec chroot /newroot /sbin/modprobe "$@"
