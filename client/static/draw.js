// The drawing page: pointer events cover mouse, pen and touch; the gateway does all preprocessing.
(function () {
  "use strict";
  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const seen = document.getElementById("seen").getContext("2d");
  const chart = document.getElementById("chart");
  const digit = document.getElementById("digit");
  const confidence = document.getElementById("confidence");
  const meta = document.getElementById("meta");
  const errorBox = document.getElementById("error");
  const auth = document.getElementById("auth");
  const tokenInput = document.getElementById("token");
  const CLASSES = 10;
  let pen = null;  // the one pointer drawing now: a second finger or a palm is ignored
  let inked = false;
  let last = null;
  let asked = 0;  // numbers the requests: an answer to an older drawing, or one cleared since, is dropped

  function clearPad() {
    ctx.fillStyle = "#ffffff";  // opaque paper, so the PNG has no transparency to guess about
    ctx.fillRect(0, 0, pad.width, pad.height);
    inked = false;
    asked++;
    resetAnswer();
  }

  function resetAnswer() {
    seen.clearRect(0, 0, 28, 28);
    digit.textContent = "?";
    confidence.textContent = "";
    meta.textContent = "";
    errorBox.hidden = true;
    delete chart.dataset.ready;
    buildChart();
  }

  function buildChart() {
    chart.innerHTML = "";
    for (let k = 0; k < CLASSES; k++) {
      const row = document.createElement("div");
      row.className = "row";
      row.style.display = "contents";
      row.innerHTML = '<span class="label">' + k + '</span><div class="bar-track"><div class="bar"></div></div>' +
        '<span class="value"></span>';
      chart.appendChild(row);
    }
  }

  // The pointer in canvas pixels: the 280x280 bitmap is shown scaled into the pad's content box (inside its
  // border), which CSS shrinks on a narrow screen.
  function point(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: (event.clientX - box.left - pad.clientLeft) * pad.width / pad.clientWidth,
      y: (event.clientY - box.top - pad.clientTop) * pad.height / pad.clientHeight,
    };
  }

  function stroke(from, to) {
    ctx.strokeStyle = "#000000";
    ctx.lineWidth = 18;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }

  pad.addEventListener("pointerdown", (event) => {
    if (pen !== null || event.button !== 0) return;  // one stroke at a time; main mouse button only
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    pen = event.pointerId;
    last = point(event);
    stroke(last, last);
    inked = true;
  });
  pad.addEventListener("pointermove", (event) => {
    if (event.pointerId !== pen) return;
    event.preventDefault();
    const next = point(event);
    stroke(last, next);
    last = next;
  });
  function endStroke(event) {
    if (event.pointerId !== pen) return;
    pen = null;
    if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
    predict();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("lostpointercapture", endStroke);  // a stroke ends even if its pointerup is lost

  function showError(message) {
    resetAnswer();  // an earlier drawing's answer must not pass for this one's
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function showInput(pixels) {
    const image = seen.createImageData(28, 28);
    pixels.forEach((row, y) => row.forEach((value, x) => {
      const i = 4 * (28 * y + x);
      image.data[i] = image.data[i + 1] = image.data[i + 2] = value;
      image.data[i + 3] = 255;
    }));
    seen.putImageData(image, 0, 0);
  }

  function showAnswer(answer) {
    errorBox.hidden = true;
    digit.textContent = answer.label;
    confidence.textContent = (100 * answer.confidence).toFixed(1) + "% sure";
    const rows = chart.querySelectorAll(".row");
    answer.probabilities.forEach((p, k) => {
      rows[k].classList.toggle("top", k === answer.digit);
      rows[k].querySelector(".bar").style.width = (100 * p).toFixed(1) + "%";
      rows[k].querySelector(".value").textContent = (100 * p).toFixed(1) + "%";
    });
    if (answer.input) showInput(answer.input);
    const version = answer.model.version === null ? "latest" : "v" + answer.model.version;
    meta.textContent = "model " + answer.model.name + " " + version + ", " + answer.timings_ms.total.toFixed(1) + " ms";
    chart.dataset.ready = "true";
  }

  async function predict() {
    if (!inked) { showError("Draw a digit first."); return; }
    const ticket = ++asked;
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const headers = { "Content-Type": "image/png" };
    if (tokenInput.value) headers["Authorization"] = "Bearer " + tokenInput.value;
    let reply;
    try {
      reply = await fetch("v1/predict?include_input=1", { method: "POST", body: blob, headers: headers });
    } catch (err) {
      if (ticket === asked) showError("The gateway did not answer: " + err);
      return;
    }
    let body = null;
    try { body = await reply.json(); } catch (err) { body = null; }
    if (ticket !== asked) return;
    if (reply.status === 401) auth.hidden = false;
    if (!reply.ok || !body || !Array.isArray(body.probabilities)) {
      showError((body && body.error) || ("HTTP " + reply.status + ": the gateway's answer was not understood"));
      return;
    }
    showAnswer(body);
  }

  document.getElementById("clear").addEventListener("click", clearPad);
  document.getElementById("predict").addEventListener("click", predict);
  clearPad();
})();
