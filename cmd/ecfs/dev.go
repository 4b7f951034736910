package main

import (
	"errors"
	"io"
)

func runDev(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", "[--data-dir DIR] [--ec K+M] MOUNTPOINT", stdout)
	fs.String("data-dir", "", "where the embedded cluster keeps its data")
	fs.String("ec", "4+2", "erasure-coding scheme")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	return errors.New("not built yet: the embedded cluster needs the metadata service and the FUSE mount, which are still to come; today only 'ecfs store' runs")
}
