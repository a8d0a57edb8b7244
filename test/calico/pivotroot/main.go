// Command pivotroot makes a directory the root of the calling process's mount namespace and
// executes a program there, the way a container runtime starts a container: pivot_root, then
// the old root detached, so that nothing of the host's file system stays reachable. chroot would
// not do: a process that enters the namespace again (setns, as Calico's mountns does through
// /proc/1/ns/mnt) lands at the namespace's root, which after chroot is still the host's.
//
// Usage: pivotroot DIR PROGRAM [ARG...]; DIR must be a mount point in a private mount namespace.
// PROGRAM is looked up in the new root's $PATH.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pivotroot: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: pivotroot DIR PROGRAM [ARG...]")
	}
	if err := syscall.Chdir(args[0]); err != nil {
		return fmt.Errorf("enter new root %q: %w", args[0], err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
	// only the new root (pivot_root(2), NOTES).
	if err := syscall.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into %q: %w", args[0], err)
	}
	if err := syscall.Unmount(".", syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return err
	}
	path, err := exec.LookPath(args[1])
	if err != nil {
		return fmt.Errorf("find %q in the new root: %w", args[1], err)
	}
	return syscall.Exec(path, args[1:], os.Environ())
}
