//go:build linux

package archive

import (
	"os"
	"strconv"
)

// dirPath names an open directory through its descriptor, so paths below
// it resolve from the directory itself whatever happens to its name.
func dirPath(d *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(d.Fd())) }
