/* callvault QA player: draws the waveform with the redacted regions, shows the transcript
 * word by word, highlights the current word, seeks on click and keeps the keyboard
 * shortcuts. Everything it needs comes from data- attributes and the JSON API: the CSP
 * allows no inline script. */
(function () {
  'use strict';

  var root = document.getElementById('qa-player');
  if (!root) { return; }
  var redacted = document.getElementById('player');
  var original = document.getElementById('original');
  var wave = document.getElementById('waveform');
  var canvas = document.getElementById('waveform-canvas');
  var regions = document.getElementById('regions');
  var playhead = document.getElementById('playhead');
  var transcript = document.getElementById('transcript');
  var statusLine = document.getElementById('player-status');
  var STEP = 5;
  var LABEL_WORD = /^\[[A-Z0-9_]+\]$/;

  var active = redacted;          // the audio element the shortcuts and clicks drive
  var knownDuration = parseFloat(root.dataset.duration) || 0;
  var peaks = null;               // the waveform API's answer
  var spans = [];                 // the transcript's redacted spans
  var channelCount = parseInt(root.dataset.channels, 10) || 1;
  var words = [];                 // {el, start, end}, sorted by start per channel
  var current = [];               // elements now highlighted
  var failures = [];
  var pending = 2;

  function duration() {
    var a = active;
    if (a && isFinite(a.duration) && a.duration > 0) { return a.duration; }
    if (peaks && peaks.duration_seconds) { return peaks.duration_seconds; }
    return knownDuration;
  }

  function say(text, failed) {
    statusLine.textContent = text;
    statusLine.classList.toggle('failed', !!failed);
  }

  function loaded(what, error) {
    pending -= 1;
    if (error) { failures.push(what + ' (' + error.message + ')'); }
    if (pending > 0) { return; }
    if (failures.length) {
      say('Could not load the ' + failures.join(' and ') + '. Reload the page; if your ' +
          'session ended, sign in again.', true);
    } else {
      say('');
    }
  }

  function getJSON(url) {
    return fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
      .then(function (resp) {
        if (!resp.ok) { throw new Error('HTTP ' + resp.status); }
        return resp.json();
      });
  }

  // --- seeking and playing -------------------------------------------------------------------
  function seek(t) {
    var d = duration();
    t = Math.max(0, t);
    if (d > 0) { t = Math.min(t, d); }
    active.currentTime = t;
    update();
  }

  function togglePlay() {
    if (active.paused || active.ended) {
      var p = active.play();
      if (p && p.catch) {
        p.catch(function (err) {
          // a pause before playback began is the listener's choice, not a failure
          if (err && err.name !== 'AbortError') {
            say('The audio could not play: ' + err.message, true);
          }
        });
      }
    } else {
      active.pause();
    }
  }

  // --- the access log: what the listener did, as the player saw it ----------------------
  // The server logs every byte range it streams; seeks the player serves from its own
  // buffer make no request, so the player reports play, pause, seek and end as well.
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var eventsUrl = '/api/recordings/' + root.dataset.recordingId + '/events';
  var seekTimer = null;

  function report(type, audio) {
    var body = JSON.stringify({type: type, variant: audio === original ? 'raw' : 'redacted',
                               position: Math.max(0, audio.currentTime || 0)});
    var headers = {'Content-Type': 'application/json'};
    if (csrfMeta) { headers['X-CSRF-Token'] = csrfMeta.getAttribute('content'); }
    fetch(eventsUrl, {method: 'POST', credentials: 'same-origin', headers: headers,
                      body: body, keepalive: true})
      .then(function (resp) {
        if (!resp.ok) { say('This play could not be logged (HTTP ' + resp.status + ').', true); }
      })
      .catch(function () { say('This play could not be logged.', true); });
  }

  var pendingSeek = null;          // the audio element whose last seek is not reported yet

  function flushSeek() {
    if (seekTimer) { window.clearTimeout(seekTimer); seekTimer = null; }
    if (pendingSeek) { var a = pendingSeek; pendingSeek = null; report('seek', a); }
  }

  function reportEvents(audio) {
    // a seek is reported before whatever follows it, and before the page goes away
    audio.addEventListener('play', function () { flushSeek(); report('play', audio); });
    audio.addEventListener('pause', function () {
      flushSeek();
      if (!audio.ended) { report('pause', audio); }
    });
    audio.addEventListener('ended', function () { flushSeek(); report('ended', audio); });
    audio.addEventListener('seeking', function () {
      // a drag along the bar is many seeks: log where it came to rest
      if (seekTimer) { window.clearTimeout(seekTimer); }
      pendingSeek = audio;
      seekTimer = window.setTimeout(flushSeek, 400);
    });
  }
  window.addEventListener('pagehide', flushSeek);
  document.addEventListener('visibilitychange', flushSeek);

  function use(audio, other) {
    reportEvents(audio);
    audio.addEventListener('play', function () {
      active = audio;
      if (other && !other.paused) { other.pause(); }
      tick();
    });
    ['timeupdate', 'seeked', 'loadedmetadata'].forEach(function (name) {
      audio.addEventListener(name, function () {
        if (audio === active) { update(); }
        if (name === 'loadedmetadata') { layoutRegions(); }
      });
    });
  }
  use(redacted, original);
  if (original) { use(original, redacted); }

  function tick() {
    update();
    if (!active.paused) { window.requestAnimationFrame(tick); }
  }

  // --- the current word and the playhead ----------------------------------------------------
  function update() {
    var t = active.currentTime;
    var d = duration();
    playhead.style.left = (d > 0 ? Math.min(100, 100 * t / d) : 0) + '%';
    var now = [];
    for (var i = 0; i < words.length; i++) {
      var w = words[i];
      if (w.start <= t && t < w.end) { now.push(w.el); }
    }
    if (now.length === current.length && now.every(function (el, k) { return el === current[k]; })) {
      return;
    }
    current.forEach(function (el) { el.classList.remove('current'); });
    now.forEach(function (el) {
      el.classList.add('current');
      keepVisible(el);
    });
    current = now;
  }

  function keepVisible(el) {
    var box = el.closest('.channel');
    if (!box) { return; }
    var top = el.offsetTop - box.offsetTop;
    if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - 2 * el.offsetHeight) {
      box.scrollTop = Math.max(0, top - box.clientHeight / 3);
    }
  }

  // --- the waveform ----------------------------------------------------------------------------
  function drawWave() {
    var ratio = window.devicePixelRatio || 1;
    var width = Math.max(1, Math.round(wave.clientWidth * ratio));
    var height = Math.max(1, Math.round(wave.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    var ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, width, height);
    if (!peaks || !peaks.channels || !peaks.channels.length) { return; }
    var lanes = peaks.channels.length;
    var laneHeight = height / lanes;
    peaks.channels.forEach(function (ch, lane) {
      var values = ch.peaks || [];
      var mid = laneHeight * lane + laneHeight / 2;
      ctx.fillStyle = lane === 0 ? '#3b6fb6' : '#5b8a3c';
      var n = values.length;
      for (var x = 0; x < width; x++) {
        var from = Math.floor(x * n / width);
        var to = Math.max(from + 1, Math.floor((x + 1) * n / width));
        var v = 0;
        for (var k = from; k < to && k < n; k++) { v = Math.max(v, values[k]); }
        var h = Math.max(1, v * (laneHeight / 2 - 2));
        ctx.fillRect(x, mid - h, 1, 2 * h);
      }
      if (lanes > 1 && lane > 0) {
        ctx.fillStyle = '#d6dbe3';
        ctx.fillRect(0, laneHeight * lane, width, 1);
      }
    });
  }

  function layoutRegions() {
    var d = duration();
    var lanes = Math.max(channelCount, peaks && peaks.channels ? peaks.channels.length : 1);
    regions.textContent = '';
    var rowOf = {};                 // per lane: labels of neighbouring regions take turns
    spans.forEach(function (s) {
      var el = document.createElement('div');
      el.className = 'redacted-region';
      if (lanes === 2 && (s.channel === 0 || s.channel === 1)) {
        el.classList.add('lane-' + s.channel + '-of-2');
      }
      el.dataset.label = s.label;
      el.dataset.start = s.start;
      el.dataset.end = s.end;
      el.dataset.channel = s.channel;
      el.title = s.label + ' redacted, ' + s.start.toFixed(1) + '–' + s.end.toFixed(1) + ' s';
      if (d > 0) {
        el.style.left = (100 * s.start / d) + '%';
        el.style.width = Math.max(0.3, 100 * (s.end - s.start) / d) + '%';
      }
      var lane = lanes === 2 ? s.channel : 0;
      rowOf[lane] = rowOf[lane] === undefined ? 0 : (rowOf[lane] + 1) % 3;
      var label = document.createElement('span');
      label.className = 'region-label row-' + rowOf[lane];
      label.textContent = s.label;
      el.appendChild(label);
      regions.appendChild(el);
    });
  }

  wave.addEventListener('click', function (event) {
    var box = wave.getBoundingClientRect();
    if (box.width <= 0) { return; }
    seek(duration() * (event.clientX - box.left) / box.width);
  });

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(drawWave, 100);
  });

  // --- the transcript ----------------------------------------------------------------------------
  function renderTranscript(doc) {
    var channels = doc.channels || [];
    spans = (doc.spans || []).filter(function (s) {
      return typeof s.start === 'number' && typeof s.end === 'number' && s.label;
    });
    if (!knownDuration && doc.duration_seconds) { knownDuration = doc.duration_seconds; }
    channelCount = Math.max(channelCount, channels.length);
    transcript.textContent = '';
    transcript.classList.toggle('two', channels.length === 2);
    words = [];
    channels.forEach(function (ch, i) {
      var box = document.createElement('section');
      box.className = 'channel';
      box.dataset.channel = ch.channel;
      var title = document.createElement('h3');
      title.textContent = channels.length > 1 ? 'Speaker ' + (i + 1) : 'Transcript';
      box.appendChild(title);
      var para = document.createElement('p');
      var list = ch.words || [];
      if (!list.length) {
        para.textContent = ch.text || '(nothing said)';
      }
      list.forEach(function (w, k) {
        var el = document.createElement('span');
        el.className = 'word';
        if (LABEL_WORD.test(w.text)) {
          el.classList.add('redacted-word');
          el.title = 'Redacted: ' + w.text.slice(1, -1);
        }
        el.dataset.start = w.start;
        el.dataset.end = w.end;
        el.textContent = w.text;
        para.appendChild(el);
        if (k < list.length - 1) { para.appendChild(document.createTextNode(' ')); }
        words.push({el: el, start: Number(w.start), end: Number(w.end)});
      });
      box.appendChild(para);
      transcript.appendChild(box);
    });
    layoutRegions();
    update();
  }

  transcript.addEventListener('click', function (event) {
    var el = event.target.closest ? event.target.closest('.word') : null;
    if (!el) { return; }
    seek(parseFloat(el.dataset.start) || 0);
  });

  // --- keyboard shortcuts --------------------------------------------------------------------
  document.addEventListener('keydown', function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    var tag = target && target.tagName ? target.tagName : '';
    if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' ||
        (target && target.isContentEditable)) {
      return;   // typing in a form field
    }
    var key = event.key;
    // buttons, links and the audio controls keep their own Space and arrow keys
    var ownKeys = tag === 'BUTTON' || tag === 'A' || tag === 'AUDIO' || tag === 'SUMMARY';
    if (ownKeys && (key === ' ' || key === 'ArrowLeft' || key === 'ArrowRight')) { return; }
    if (key === ' ' || key === 'k' || key === 'K') {
      togglePlay();
    } else if (key === 'j' || key === 'J' || key === 'ArrowLeft') {
      seek(active.currentTime - STEP);
    } else if (key === 'l' || key === 'L' || key === 'ArrowRight') {
      seek(active.currentTime + STEP);
    } else {
      return;
    }
    event.preventDefault();
  });

  // --- load -------------------------------------------------------------------------------------
  drawWave();
  getJSON(root.dataset.waveformUrl).then(function (data) {
    peaks = data;
    drawWave();
    layoutRegions();
    loaded('waveform');
  }, function (err) { loaded('waveform', err); });
  getJSON(root.dataset.transcriptUrl).then(function (doc) {
    renderTranscript(doc);
    loaded('transcript');
  }, function (err) { loaded('transcript', err); });
}());
