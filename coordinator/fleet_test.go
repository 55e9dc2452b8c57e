package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

var fleetT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func fleetEvent(at time.Duration, state string) api.WorkerEvent {
	return api.WorkerEvent{Time: fleetT0.Add(at), State: state, SessionID: "s-1"}
}

func TestFleetHistoryCutAndReturn(t *testing.T) {
	f := newFleetHistory(nil)
	f.record("w1", fleetEvent(0, api.WorkerConnected), true)
	f.record("w1", fleetEvent(time.Second, api.WorkerDisconnected), false)

	away := api.Worker{ID: "w1"}
	f.fill(&away, fleetT0.Add(2*time.Second))
	assert.Equal(t, fleetT0.Add(time.Second), away.StateSince)
	assert.Equal(t, 0, away.Reconnects)
	assert.Equal(t, int64(1000), away.DowntimeMs, "the current disconnection counts")

	f.record("w1", fleetEvent(3*time.Second, api.WorkerConnected), true)
	back := api.Worker{ID: "w1"}
	f.fill(&back, fleetT0.Add(10*time.Second))
	assert.Equal(t, fleetT0.Add(3*time.Second), back.StateSince)
	assert.Equal(t, 1, back.Reconnects)
	assert.Equal(t, int64(2000), back.DowntimeMs, "only the time away counts")

	timeline, ok := f.timeline("w1", fleetT0.Add(10*time.Second))
	require.True(t, ok)
	assert.Equal(t, []string{api.WorkerConnected, api.WorkerDisconnected, api.WorkerConnected},
		statesOf(timeline.Events))
	assert.Equal(t, fleetMaxEvents, timeline.MaxEvents)

	unknown := api.Worker{ID: "w2"}
	f.fill(&unknown, fleetT0)
	assert.True(t, unknown.StateSince.IsZero())
	_, ok = f.timeline("w2", fleetT0)
	assert.False(t, ok)
}

func TestFleetHistoryRepeatedState(t *testing.T) {
	f := newFleetHistory(nil)
	f.record("w1", fleetEvent(0, api.WorkerConnected), true)
	// A resume on a new connection before the old one was seen to die.
	f.record("w1", fleetEvent(time.Second, api.WorkerConnected), true)
	wk := api.Worker{ID: "w1"}
	f.fill(&wk, fleetT0.Add(2*time.Second))
	assert.Equal(t, fleetT0, wk.StateSince, "a repeated state keeps its start")
	assert.Equal(t, 1, wk.Reconnects)
	assert.Zero(t, wk.DowntimeMs)
}

func TestFleetHistoryDrainedIsNoDowntime(t *testing.T) {
	f := newFleetHistory(nil)
	f.record("w1", fleetEvent(0, api.WorkerConnected), true)
	f.record("w1", fleetEvent(time.Second, api.WorkerDraining), false)
	f.record("w1", fleetEvent(2*time.Second, api.WorkerDrained), false)
	wk := api.Worker{ID: "w1"}
	f.fill(&wk, fleetT0.Add(time.Minute))
	assert.Zero(t, wk.DowntimeMs)
	assert.Equal(t, fleetT0.Add(2*time.Second), wk.StateSince)
}

func TestFleetHistoryClockStepBack(t *testing.T) {
	f := newFleetHistory(nil)
	f.record("w1", fleetEvent(time.Minute, api.WorkerConnected), true)
	f.record("w1", fleetEvent(0, api.WorkerDisconnected), false)
	timeline, ok := f.timeline("w1", fleetT0.Add(time.Minute))
	require.True(t, ok)
	assert.Equal(t, fleetT0.Add(time.Minute), timeline.Events[1].Time, "an entry never goes back in time")
	assert.Zero(t, timeline.DowntimeMs)
}

func TestFleetHistoryBounds(t *testing.T) {
	f := newFleetHistory(nil)
	extra := 10
	for i := range fleetMaxEvents + extra {
		state := api.WorkerConnected
		if i%2 == 1 {
			state = api.WorkerDisconnected
		}
		f.record("w1", fleetEvent(time.Duration(i)*time.Second, state), state == api.WorkerConnected)
	}
	for i := range fleetMaxSamples + extra {
		f.sample(fleetT0.Add(time.Duration(i)*time.Second), nil, nil)
	}
	timeline, ok := f.timeline("w1", fleetT0)
	require.True(t, ok)
	require.Len(t, timeline.Events, fleetMaxEvents)
	assert.Equal(t, fleetT0.Add(time.Duration(extra)*time.Second), timeline.Events[0].Time, "the oldest go first")
	require.Len(t, timeline.Samples, fleetMaxSamples)
	assert.Equal(t, fleetT0.Add(time.Duration(extra)*time.Second), timeline.Samples[0].Time)
	assert.Equal(t, (fleetMaxEvents+extra)/2-1, timeline.Reconnects, "dropped entries still count")
}

func TestFleetHistoryPrune(t *testing.T) {
	f := newFleetHistory(nil)
	f.record("gone", fleetEvent(0, api.WorkerConnected), true)
	f.record("gone", fleetEvent(time.Second, api.WorkerDisconnected), false)
	f.record("drained", fleetEvent(time.Second, api.WorkerDrained), false)
	f.record("here", fleetEvent(0, api.WorkerConnected), true)

	assert.Empty(t, f.prune(fleetT0.Add(time.Second+fleetRetention-time.Nanosecond)), "within retention")
	dropped := f.prune(fleetT0.Add(time.Second + fleetRetention))
	assert.ElementsMatch(t, []string{"gone", "drained"}, dropped)
	_, ok := f.timeline("here", fleetT0)
	assert.True(t, ok, "a connected worker is never dropped")
}

// TestForgetDepartedWorkers checks that the coordinator's per-worker state
// of a worker that left goes with its history, unless it has a session.
func TestForgetDepartedWorkers(t *testing.T) {
	s := &Server{
		fleet:    newFleetHistory(nil),
		workers:  map[string]*workerState{"gone": {connects: 3, drained: true}, "back": {connects: 1}},
		sessions: map[string]*session{"back": {}},
		log:      hclog.NewNullLogger(),
	}
	s.fleet.record("gone", fleetEvent(0, api.WorkerDrained), false)
	s.fleet.record("back", fleetEvent(0, api.WorkerDisconnected), false)

	s.forgetDeparted(fleetT0.Add(fleetRetention - time.Nanosecond))
	assert.Len(t, s.workers, 2, "within retention")

	s.forgetDeparted(fleetT0.Add(fleetRetention))
	assert.NotContains(t, s.workers, "gone")
	assert.Contains(t, s.workers, "back", "a worker with a session keeps its state")
}

func TestFleetSampleRTTWhileConnected(t *testing.T) {
	f := newFleetHistory(nil)
	f.record("up", fleetEvent(0, api.WorkerConnected), true)
	f.record("down", fleetEvent(0, api.WorkerDisconnected), false)
	rtt := map[string]time.Duration{"up": 1500 * time.Microsecond, "down": time.Second}
	round := f.sample(fleetT0, rtt, map[string]int{"up": 2})
	assert.InDelta(t, 1.5, round["up"].RTTMs, 1e-9)
	assert.Equal(t, 2, round["up"].Running)
	assert.Zero(t, round["down"].RTTMs, "no round-trip time while disconnected")
	assert.Equal(t, api.WorkerDisconnected, round["down"].State)
}

func TestStreamHubDropsSlowClient(t *testing.T) {
	hub := newStreamHub(hclog.NewNullLogger())
	slow, err := hub.subscribe("127.0.0.1")
	require.NoError(t, err)
	for range streamBuffer {
		hub.publish("tick", map[string]int{"n": 1})
	}
	select {
	case <-slow.done:
		t.Fatal("a client with a full buffer but no overflow was dropped")
	default:
	}
	hub.publish("tick", map[string]int{"n": 2})
	select {
	case <-slow.done:
	default:
		t.Fatal("a client past its buffer was not dropped")
	}
	assert.True(t, hub.unsubscribe(slow), "unsubscribe reports the drop")
	assert.Zero(t, hub.count())
}

func TestStreamHubLimitAndClose(t *testing.T) {
	hub := newStreamHub(hclog.NewNullLogger())
	clients := make([]*streamClient, 0, maxStreams)
	for i := range maxStreams {
		c, err := hub.subscribe(fmt.Sprintf("10.0.0.%d", i/maxStreamsPerAddr))
		require.NoError(t, err)
		clients = append(clients, c)
	}
	_, err := hub.subscribe("10.0.1.1")
	require.ErrorIs(t, err, errStreamsFull)

	hub.close()
	for _, c := range clients {
		select {
		case <-c.done:
		default:
			t.Fatal("close left a stream open")
		}
		assert.False(t, hub.unsubscribe(c), "a stream ended by close was not dropped for falling behind")
	}
	_, err = hub.subscribe("10.0.1.1")
	require.ErrorIs(t, err, errStreamsClosed)
}

// One address gets maxStreamsPerAddr streams, and a stream that ends
// frees its slot for that address.
func TestStreamHubLimitPerAddr(t *testing.T) {
	hub := newStreamHub(hclog.NewNullLogger())
	clients := make([]*streamClient, 0, maxStreamsPerAddr)
	for range maxStreamsPerAddr {
		c, err := hub.subscribe("10.0.0.1")
		require.NoError(t, err)
		clients = append(clients, c)
	}
	_, err := hub.subscribe("10.0.0.1")
	require.ErrorIs(t, err, errAddrFull)
	_, err = hub.subscribe("10.0.0.2")
	require.NoError(t, err, "another address gets a stream")

	hub.unsubscribe(clients[0])
	_, err = hub.subscribe("10.0.0.1")
	require.NoError(t, err, "an ended stream frees its slot")
	assert.Equal(t, maxStreamsPerAddr+1, hub.count())
}

func TestStreamEventFormat(t *testing.T) {
	msg, err := encodeStreamEvent(api.StreamSamples, map[string]string{"a": "line\nbreak"})
	require.NoError(t, err)
	assert.Equal(t, "event: samples\ndata: {\"a\":\"line\\nbreak\"}\n\n", string(msg))
}

func TestWorkerTimelineAfterCutAndResume(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := newSeqWorker(t, ts, "w1")
	require.NotNil(t, w.connect().GetWelcome())
	w.sync()
	w.cut()
	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 1 }, waitFor, 10*time.Millisecond)
	require.True(t, w.connect().GetWelcome().GetResumed())

	var timeline api.WorkerTimeline
	require.Equal(t, http.StatusOK, doJSON(t, "GET", ts.url+"/v1/workers/w1/timeline", nil, &timeline))
	assert.Equal(t, []string{api.WorkerConnected, api.WorkerDisconnected, api.WorkerConnected},
		statesOf(timeline.Events))
	assert.False(t, timeline.Events[0].Resumed)
	assert.True(t, timeline.Events[2].Resumed)
	assert.Equal(t, timeline.Events[0].SessionID, timeline.Events[2].SessionID)
	assert.NotEmpty(t, timeline.Events[1].Reason, "the disconnection has a reason")
	assert.Equal(t, 1, timeline.Reconnects)
	assert.Equal(t, fleetSampleInterval.Milliseconds(), timeline.SampleIntervalMs)

	var list struct{ Workers []api.Worker }
	require.Equal(t, http.StatusOK, doJSON(t, "GET", ts.url+"/v1/workers", nil, &list))
	require.Len(t, list.Workers, 1)
	assert.Equal(t, 1, list.Workers[0].Reconnects)
	assert.Equal(t, timeline.Events[2].Time, list.Workers[0].StateSince)
	assert.Equal(t, timeline.DowntimeMs, list.Workers[0].DowntimeMs)

	var apiErr api.Error
	require.Equal(t, http.StatusNotFound, doJSON(t, "GET", ts.url+"/v1/workers/nobody/timeline", nil, &apiErr))
	assert.Contains(t, apiErr.Error, `no history for worker "nobody"`)
}

// connectDraining connects a synced worker that then sends Draining with
// the reason SIGTERM, and waits until its timeline shows it draining.
func connectDraining(t *testing.T, ts *testServer, id string) *fakeWorker {
	t.Helper()
	w, _ := connectSynced(t, ts, id, []string{"command"})
	w.send(&pb.Frame{Body: &pb.Frame_Draining{Draining: &pb.Draining{Reason: "SIGTERM"}}})
	require.Eventually(t, func() bool {
		timeline, ok := ts.fleet.timeline(id, time.Now())
		return ok && timeline.State == api.WorkerDraining
	}, waitFor, 10*time.Millisecond)
	return w
}

func TestWorkerTimelineDrained(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := connectDraining(t, ts, "w1")
	w.close()
	require.Eventually(t, func() bool {
		timeline, ok := ts.fleet.timeline("w1", time.Now())
		return ok && timeline.State == api.WorkerDrained
	}, waitFor, 10*time.Millisecond)
	timeline, _ := ts.fleet.timeline("w1", time.Now())
	assert.Equal(t, []string{api.WorkerConnected, api.WorkerDraining, api.WorkerDrained}, statesOf(timeline.Events))
	assert.Contains(t, timeline.Events[1].Reason, "SIGTERM")
	assert.Zero(t, timeline.DowntimeMs)
}

// TestDrainingWorkerCutIsNotDrained checks two ends of a draining
// worker's connection: a cut, and the close of a connector that lost its
// host. After each, the worker is disconnected and may resume its
// session. Its drain counts once, when the worker leaves with the
// worker-stopping close.
func TestDrainingWorkerCutIsNotDrained(t *testing.T) {
	ends := map[string]func(w *seqWorker){
		"cut":                   func(w *seqWorker) { w.cut() },
		"connector lost a host": func(w *seqWorker) { w.close("worker host unreachable from its connector plugin") },
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, testConfig(t, ""))
			w := newSeqWorker(t, ts, "w1")
			w.connect()
			w.sync()
			w.send(&pb.Frame{Body: &pb.Frame_Draining{Draining: &pb.Draining{Reason: "SIGTERM"}}})
			require.Eventually(t, func() bool { return workerViewState(t, ts, "w1") == api.WorkerDraining },
				waitFor, 10*time.Millisecond)

			end(w)
			require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 1 }, waitFor, 10*time.Millisecond)
			assert.Equal(t, api.WorkerDisconnected, workerViewState(t, ts, "w1"))
			assert.Zero(t, ts.Stats().DrainedWorkers, "the drain has not ended")

			resumed := time.Now()
			require.True(t, w.connect().GetWelcome().GetResumed(), "the draining session can be resumed")
			assert.Equal(t, api.WorkerDraining, workerViewState(t, ts, "w1"))

			w.close(protocol.CloseWorkerStopping)
			require.Eventually(t, func() bool { return workerViewState(t, ts, "w1") == api.WorkerDrained },
				waitFor, 10*time.Millisecond)
			assert.EqualValues(t, 1, ts.Stats().DrainedWorkers)
			assert.Nil(t, ts.sessionFor("w1"), "the session of a worker that left after its drain ends at once")
			workers, err := ts.listWorkers(context.Background())
			require.NoError(t, err)
			require.Len(t, workers, 1)
			assert.False(t, workers[0].LastSeen.Before(resumed.Truncate(time.Millisecond)),
				"last seen %s is the start of the session, not its last frame", workers[0].LastSeen)
			// The store keeps the last frame's time too, for the list after
			// a coordinator restart.
			assert.Eventually(t, func() bool {
				records, err := ts.store.ListWorkers(context.Background())
				return err == nil && len(records) == 1 && !records[0].LastSeen.Before(resumed.Truncate(time.Millisecond))
			}, waitFor, 10*time.Millisecond, "the store keeps the start of the session as the last-seen time")
		})
	}
}

func TestStreamSendsWorkerEvents(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	stream := openStream(t, ts.url, "")
	hello := stream.next(t, api.StreamHello)
	assert.Contains(t, hello, `"max_events":100`)
	stream.next(t, api.StreamSnapshot)

	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	var connected api.StreamWorkerEventData
	require.NoError(t, json.Unmarshal([]byte(stream.next(t, api.StreamWorkerEvent)), &connected))
	assert.Equal(t, "w1", connected.WorkerID)
	assert.Equal(t, api.WorkerConnected, connected.State)

	w.close()
	var left api.StreamWorkerEventData
	require.NoError(t, json.Unmarshal([]byte(stream.next(t, api.StreamWorkerEvent)), &left))
	assert.Equal(t, api.WorkerDisconnected, left.State)
	assert.NotEmpty(t, left.Event.Reason)

	var snapshot api.StreamSnapshotData
	require.NoError(t, json.Unmarshal([]byte(stream.next(t, api.StreamSnapshot)), &snapshot))
	require.Len(t, snapshot.Workers, 1)
	assert.Equal(t, api.WorkerDisconnected, snapshot.Workers[0].State)
	assert.Contains(t, snapshot.Tasks, api.StateQueued)
}

// A stream lives past the server's read timeout, which bounds reading the
// request only.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.HTTPReadHeaderTimeout = 300 * time.Millisecond
	cfg.HTTPReadTimeout = 300 * time.Millisecond
	ts := startServer(t, cfg)
	opened := time.Now()
	stream := openStream(t, ts.url, "")
	stream.next(t, api.StreamHello)
	stream.next(t, api.StreamSnapshot)
	var snapshot api.StreamSnapshotData
	require.NoError(t, json.Unmarshal([]byte(stream.next(t, api.StreamSnapshot)), &snapshot))
	assert.Greater(t, snapshot.Time.Sub(opened), 3*cfg.HTTPReadTimeout, "a later snapshot arrived")
}

func TestStreamNeedsReadToken(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.API.Auth = config.APIAuthToken
	ts := startServer(t, cfg)
	read := createToken(t, ts, RoleRead, nil)

	status, apiErr := doWithToken(t, "GET", ts.url+api.StreamPath, "", "")
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Contains(t, apiErr.Error, "role read")
	status, _ = doWithToken(t, "GET", ts.url+"/v1/workers/w1/timeline", "", "")
	assert.Equal(t, http.StatusUnauthorized, status)

	stream := openStream(t, ts.url, read)
	stream.next(t, api.StreamHello)
}

func TestStreamLimitPerAddr(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	for range maxStreamsPerAddr {
		openStream(t, ts.url, "").next(t, api.StreamHello)
	}
	req, err := http.NewRequest("GET", ts.url+api.StreamPath, nil)
	require.NoError(t, err)
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	var apiErr api.Error
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&apiErr))
	assert.Contains(t, apiErr.Error, "from 127.0.0.1")
}

// A stream ends after its lifetime although its client is still
// connected, so a client that never reads cannot keep its slot.
func TestStreamEndsAfterLifetime(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	ts.streams.mu.Lock()
	ts.streams.lifetime = 500 * time.Millisecond
	ts.streams.mu.Unlock()

	stream := openStream(t, ts.url, "")
	stream.next(t, api.StreamHello)
	stream.waitEnded(t)
	require.Eventually(t, func() bool { return ts.streams.count() == 0 },
		waitFor, 10*time.Millisecond, "the ended stream still holds its slot")
}

// Shutdown ends open streams at once instead of waiting for them until
// the shutdown timeout.
func TestStreamEndsOnShutdown(t *testing.T) {
	var logs syncBuffer
	ts := startServerLogging(t, testConfig(t, ""), &logs)
	stream := openStream(t, ts.url, "")
	stream.next(t, api.StreamHello)
	ts.stop()
	stream.waitEnded(t)
	assert.NotContains(t, logs.String(), "did not finish before the shutdown timeout")
}

func TestDashboardServedWithoutToken(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.API.Auth = config.APIAuthToken
	ts := startServer(t, cfg)
	resp, err := httpClient.Get(ts.url + "/ui/")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
}

// testStream reads a server-sent event stream in the background.
type testStream struct {
	events chan [2]string
	done   chan struct{}
}

// openStream opens the event stream with an optional token and closes it
// when the test ends.
func openStream(t *testing.T, baseURL, token string) *testStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", baseURL+api.StreamPath, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))

	s := &testStream{events: make(chan [2]string, 1000), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		scanner := bufio.NewScanner(resp.Body)
		scanner.Buffer(nil, 1<<20)
		var name string
		for scanner.Scan() {
			line := scanner.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				select {
				case s.events <- [2]string{name, strings.TrimPrefix(line, "data: ")}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.done
	})
	return s
}

// next returns the data of the next event named name, skipping others.
func (s *testStream) next(t *testing.T, name string) string {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev := <-s.events:
			if ev[0] == name {
				return ev[1]
			}
		case <-s.done:
			t.Fatalf("stream ended before a %s event", name)
		case <-deadline:
			t.Fatalf("no %s event within %s", name, waitFor)
		}
	}
}

func (s *testStream) waitEnded(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(waitFor):
		t.Fatal("stream still open")
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func statesOf(events []api.WorkerEvent) []string {
	states := make([]string, 0, len(events))
	for _, ev := range events {
		states = append(states, ev.State)
	}
	return states
}
