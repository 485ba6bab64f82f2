// cronoracle answers, for each JSON line on stdin, what Kubernetes does with a CronJob's
// spec.schedule and spec.timeZone: whether the API server accepts them (the checks of
// k8s.io/kubernetes/pkg/apis/batch/validation: cron.ParseStandard, no "TZ" in the schedule,
// and validateTimeZone), and the controller's next fire times (Schedule.Next in the zone).
//
//	in:  {"schedule": "0 2 * * *", "tz": "Europe/London", "after": 1700000000, "count": 5}
//	out: {"schedule_ok": true, "schedule_error": "", "tz_ok": true, "tz_error": "", "next": [unix seconds...]}
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // as a fallback when the system has no zone database

	"github.com/robfig/cron/v3"
)

type query struct {
	Schedule string `json:"schedule"`
	TZ       string `json:"tz"`
	After    int64  `json:"after"`
	Count    int    `json:"count"`
}

type answer struct {
	ScheduleOK    bool    `json:"schedule_ok"`
	ScheduleError string  `json:"schedule_error"`
	TZOK          bool    `json:"tz_ok"`
	TZError       string  `json:"tz_error"`
	Next          []int64 `json:"next"`
}

// validateScheduleFormat, for a new object (allowTZInSchedule false).
func validateSchedule(schedule string) (sched cron.Schedule, err error) {
	defer func() { // robfig v3.0.1 panics on a few inputs ("TZ=x"); the API server recovers too
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	sched, err = cron.ParseStandard(schedule)
	if err == nil && strings.Contains(schedule, "TZ") {
		err = fmt.Errorf("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
	}
	return sched, err
}

var validTimeZoneCharacters = regexp.MustCompile(`^[A-Za-z\.\-_0-9+]{1,14}$`)

// validateTimeZone, as in k8s.io/kubernetes/pkg/apis/batch/validation.
func validateTimeZone(tz string) error {
	if len(tz) == 0 {
		return fmt.Errorf("timeZone must be nil or non-empty string")
	}
	for _, part := range strings.Split(tz, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, "-") || !validTimeZoneCharacters.MatchString(part) {
			return fmt.Errorf("unknown time zone %s", tz)
		}
	}
	if strings.EqualFold(tz, "Local") {
		return fmt.Errorf("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return err
	}
	return nil
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var q query
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			fmt.Fprintln(os.Stderr, "cronoracle: bad input:", err)
			os.Exit(2)
		}
		a := answer{Next: []int64{}}
		sched, err := validateSchedule(q.Schedule)
		a.ScheduleOK = err == nil
		if err != nil {
			a.ScheduleError = err.Error()
		}
		if err := validateTimeZone(q.TZ); err != nil {
			a.TZError = err.Error()
		} else {
			a.TZOK = true
		}
		if a.ScheduleOK && a.TZOK {
			loc, _ := time.LoadLocation(q.TZ)
			t := time.Unix(q.After, 0).In(loc)
			for i := 0; i < q.Count; i++ {
				t = sched.Next(t)
				if t.IsZero() {
					break
				}
				a.Next = append(a.Next, t.Unix())
			}
		}
		if err := enc.Encode(a); err != nil {
			os.Exit(1)
		}
		out.Flush()
	}
}
