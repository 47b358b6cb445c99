//go:build darwin || freebsd || netbsd

package routes

import (
	"os"
	"syscall"
	"time"
)

// changeTime is the inode change time of fi: moved by every write, even
// one that restores the modification time, and never set by hand.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctimespec.Unix())
	}
	return time.Time{}
}
