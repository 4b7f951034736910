//go:build cluster

package fs

import "testing"

// TestClusterReadReportsBadShards is TestReadReportsBadShards on the real
// cluster: shard files corrupted and removed on the stores' disks, read
// around by the real object layer and reported through the real service.
func TestClusterReadReportsBadShards(t *testing.T) {
	t.Parallel()
	readReportsBadShards(t, newClusterEnv(t))
}
