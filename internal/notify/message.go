package notify

import (
	"context"
	"fmt"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"
)

// sendMessage sends one message through shoutrrr. The service is set up
// here, inside the caller's time bound: some (Matrix) log in when they
// read their URL.
func sendMessage(_ context.Context, raw, title, body string) error {
	r := router.ServiceRouter{}
	svc, err := r.Locate(raw)
	if err != nil {
		return fmt.Errorf("cannot set up the service: %w", err)
	}
	params := types.Params{"title": title}
	if err := svc.Send(body, &params); err != nil {
		return err
	}
	return nil
}
