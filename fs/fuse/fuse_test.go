package fuse

import "testing"

func TestMountOptionsKeepModeZero(t *testing.T) {
	if !mountOptions(MountOptions{}).NullPermissions {
		t.Fatal("mount options without NullPermissions: go-fuse shows mode 0000 as 0644/0755")
	}
}
