package links

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestRetryDump(t *testing.T) {
	partial, full := []int{1}, []int{1, 2, 3}
	otherErr := errors.New("netlink socket gone")
	interrupted := func(n int) []error { return slices.Repeat([]error{netlink.ErrDumpInterrupted}, n) }
	tests := []struct {
		name      string
		errs      []error // what successive calls return; later calls succeed
		cancelled bool
		want      []int
		wantCalls int
		wantErr   error
	}{
		{name: "uninterrupted", want: full, wantCalls: 1},
		{name: "interrupted twice then complete", errs: interrupted(2), want: full, wantCalls: 3},
		{name: "interrupted on the last allowed attempt", errs: interrupted(maxDumpAttempts - 1), want: full, wantCalls: maxDumpAttempts},
		{name: "always interrupted gives up without partial results", errs: interrupted(maxDumpAttempts), wantCalls: maxDumpAttempts, wantErr: netlink.ErrDumpInterrupted},
		{name: "other errors are not retried", errs: []error{otherErr}, wantCalls: 1, wantErr: otherErr},
		{name: "a cancelled context stops before dumping", cancelled: true, wantCalls: 0, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				cancel()
			}
			calls := 0
			got, err := retryDump(ctx, "things", func() ([]int, error) {
				calls++
				if calls <= len(tt.errs) {
					// netlink hands back partial results with ErrDumpInterrupted.
					return partial, tt.errs[calls-1]
				}
				return full, nil
			})
			if calls != tt.wantCalls || !slices.Equal(got, tt.want) || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("got %v, %v after %d calls; want %v, %v after %d", got, err, calls, tt.want, tt.wantErr, tt.wantCalls)
			}
		})
	}
}
