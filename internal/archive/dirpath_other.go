//go:build !linux

package archive

import "os"

// dirPath: without /proc, paths are resolved from the directory's name.
func dirPath(d *os.File) string { return d.Name() }
